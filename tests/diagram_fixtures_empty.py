"""
A module with no machines, to check the "nothing found" error.
"""

ANSWER = 42
