"""densescale.scaling"""
