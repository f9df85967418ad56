"""Point-cloud loaders and generators (installed as ``torchsparse_lite.datasets``)."""
