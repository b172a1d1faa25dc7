"""Fakes of the outside services VoxCanvas talks to (Discord, Gemini), served on 127.0.0.1 inside
the test process so the real client libraries can be exercised without a network."""
