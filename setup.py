"""mindglm-image: MindSpore-native GLM-Image (AR prior generator + DiT decoder) for Ascend and CPU."""
from setuptools import find_packages, setup

#: the OpenAI-compatible images server (``mindglm-image serve``)
SERVE = ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9", "prometheus_client>=0.20"]

setup(
    name="mindglm-image",
    version="0.1.0",
    description="MindSpore port of the GLM-Image text-to-image model for Ascend NPUs (CPU fp32 backend included)",
    packages=find_packages(include=["mindglm_image", "mindglm_image.*", "ckpt_convert", "ckpt_convert.*",
                                    "kernels", "kernels.*"]),
    # the built-in demo model (mindglm_image/demo/default_model.py): a model folder, not a package
    package_data={"": ["*.json"], "mindglm_image.demo": ["model/*.json", "model/*/*"]},
    python_requires=">=3.9,<3.12",
    install_requires=[
        "mindspore==2.10.0",
        "numpy>=1.24,<2",  # MindSpore 2.10 wheels are built against numpy 1.x (bf16 helpers fail under 2.x)
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "pillow>=10.1",  # ImageFont.load_default(size=...): the scalable font the demo data is written in
        "tqdm>=4.60",
        "jinja2>=3.1",  # renders the checkpoint's chat template exactly as transformers does
    ],
    extras_require={"serve": SERVE, "test": ["pytest>=8", "pytest-xdist>=3.5", "openai>=1.40", *SERVE]},  # tests call the server with openai
    entry_points={"console_scripts": ["mindglm-image=mindglm_image.cli:main"]},
)
