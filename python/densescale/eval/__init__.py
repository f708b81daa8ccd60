"""densescale.eval"""
