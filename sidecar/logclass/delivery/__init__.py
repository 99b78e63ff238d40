"""Durable delivery shared by the front ends that forward what they take (relay, otlp): the
pieces of an on-disk buffer that know nothing of a transport (``store``). Below the front ends:
each may import it, it imports none of them."""
