"""The bottom layer: the user-mistake exception and the one command parser, what a process imports first, and the
process group (rank, launcher, exit)."""
