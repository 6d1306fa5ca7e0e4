import sys; print("placeholder"); sys.exit(0)
