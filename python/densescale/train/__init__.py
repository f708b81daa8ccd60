"""densescale.train"""
