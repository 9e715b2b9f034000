"""Scripts run by hand: `.venv/bin/python -m scripts.<name>`."""
