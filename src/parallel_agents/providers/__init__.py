"""LLM providers: one contract (`base.Provider`), one module per backend."""
