"""Host-side (numpy) noise schedules and sampler steps: the flow-match Euler scheduler of GLM-Image."""
