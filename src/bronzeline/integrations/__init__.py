"""Orchestrator integrations, each built from `bronzeline plan` (bronzeline/plan.py) and running every
unit through the same library calls as the command line."""
