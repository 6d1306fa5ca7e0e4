"""The ``loihi`` target: Loihi 2 through Lava (placeholder; see backend.py)."""
