"""The simulator: LLP26 shapes, synthetic bodies, X-ray physics and the imaging chain, the DRR and face-map renderer, training sets from shapes or CT collections. May import the shared ground (geometry, errors, bones, facemaps, io, cluster, metrics, raster); draws its previews with apps.viz.
"""
