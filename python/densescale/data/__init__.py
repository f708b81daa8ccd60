"""densescale.data"""
