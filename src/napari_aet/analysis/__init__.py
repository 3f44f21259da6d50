"""Analysis of results: atom-model and volume metrics; stage 9 (lattice, chemical order, nuclei, structure,
strain) and 4D registration and tracking — see docs/analysis.md."""
