"""A run while it runs and after: the NaN guard and the interrupt handler, tracing a batch back to its file rows, what
output_dir gets."""
