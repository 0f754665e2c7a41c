"""Demo data: synthetic captioned scenes (``synthetic``) and a classical checker of generated images (``checker``)."""
