"""`python -m sandbox`: the command line (parser.py) and its commands, one module per group:
lifecycle (up, down), status, behaviour (set), faults (fault); common and health are shared."""
