"""The toy Monte Carlo of the neural z-vertex trigger's inputs, behind the embedded default data set.

Tracks come from a few sources along the beam line (collisions at the interaction point; Touschek,
beam-gas and localised beam-loss background), cross the nine CDC superlayers and leave segments where
they are inside the chamber. The 2D track finder measures each track's azimuth and curvature with
errors common to all superlayers; a stereo hit lies off the 2D track by the stereo wire's azimuthal
shift at the track's z at that radius, so the stereo relIDs carry z the way the real ones do (with the
real signs). Drift times follow the drift distance, with per-layer hit inefficiency, late hits and
left/right ambiguity. Everything is vectorised with numpy (no loop over tracks) and written in the
real neuroresults format. See docs/toy_mc.md for the model and its comparison with real data.

Modules, each importing only those above it:
    detector      the CDC and trigger hardware as the toy sees them: geometry, hits, drift times, scaling
    generator     the tracks, events and old network's predictions: `generate`, `TOY_VERSION`
    reference     `reference_fit`, what the stereo inputs carry (the toy's geometry, no training)
    default_set   the embedded default data set's files: `ensure_default_dataset`, `DEFAULT_DIR`, ...
    real_sample   the real Belle II sample's statistics the toy is compared with
    stats         statistics of any neuroresults table and their comparison tables
    criteria      the comparison criteria of issue 12, pass or miss
    cli           `python -m neuro_trigger.data.toy.cli`: write toy files, compare with real data
"""
