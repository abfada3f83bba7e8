"""`python -m li2.cli …` is `li2 …`."""
from .root import main

main()
