"""`python -m faceverify.cli`: the same as the `faceverify` command."""

from . import main

main()
