"""edgepack: train, compress, export, verify and benchmark a small image CNN for edge devices."""

__version__ = "0.1.0"
