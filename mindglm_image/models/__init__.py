"""MindSpore cells of GLM-Image; parameter names equal the reference's so conversion is a rename table."""
