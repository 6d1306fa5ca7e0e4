"""Custom Lava processes. Only Process and ProcessModel modules live here: the Lava compiler
executes every ``.py`` file in the folder of a Process class it resolves."""
