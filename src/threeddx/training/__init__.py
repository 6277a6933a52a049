"""Training: samples to tensors with the imaging chain on the fly (dataset), the trainer and its typed config (train, trainconfig). May import the shared ground, the simulator and the network.
"""
