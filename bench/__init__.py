"""make bench: the service measured against the framework's own floor, and a guarded call against
the same call unguarded, side by side in one run. `python -m bench --help` lists the options;
__main__.py says what runs in which order.
"""
