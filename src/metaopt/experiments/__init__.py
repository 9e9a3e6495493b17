"""The papers' experiments as functions: each meta-trains, evaluates and writes its results.

They sit above the training loop and below the command line, which only parses flags
and calls them (``metaopt demo --task ...``).
"""
