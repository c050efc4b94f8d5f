"""The sans-I/O core: task states and the scheduler. No asyncio, no clock, no I/O here."""
