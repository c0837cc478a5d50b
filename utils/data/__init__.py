"""Data in: where rows come from (sources), what a valid row is (schemas), formats converted to TRL's, the column fast
path, the reading loop, the Arrow copy, mixtures, token lengths, assistant masks, and the datasets TRL gets
(loading)."""
