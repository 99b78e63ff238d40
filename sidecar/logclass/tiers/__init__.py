"""The classification tiers, cheapest first: regex, embedding, LLM."""
