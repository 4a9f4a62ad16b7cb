"""Training the embedded world: the text-to-image pipeline (:mod:`.pipeline`), the three learned
verifiers (:mod:`.verifiers`), their rendered data (:mod:`.data`), and sample grids for the README."""
