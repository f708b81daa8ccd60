"""densescale.models"""
