"""The network: what it sees of a radiograph (preprocess), its architectures and presets (model), its losses and its checkpoints. May import the shared ground; checkpoint checks mesher names against meshing.reconstruct.
"""
