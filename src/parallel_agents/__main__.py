"""`python -m parallel_agents` is the `parallel-agents` command."""

from .cli import main

main()
