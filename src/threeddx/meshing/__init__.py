"""Meshing: back-projection, the mesher registry (reconstruct.MESHERS) and the shape-model fit with its judgement (ssm). May import the shared ground; ssm builds a missing model from simulator.anatomy.
"""
