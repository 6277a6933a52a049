"""Evaluation: scoring a split against the ground truth, tables and galleries. May import every room.
"""
