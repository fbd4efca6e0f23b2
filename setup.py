"""simclr-jax: SimCLR / SimCLRv2 in JAX + Flax."""

import setuptools

setuptools.setup(
    name='simclr-jax',
    version='0.1.0',
    description='SimCLR and SimCLRv2 in JAX/Flax, data-parallel over all devices.',
    packages=setuptools.find_packages(include=['simclr_jax', 'simclr_jax.*']),
    python_requires='>=3.10',
    install_requires=[
        'jax>=0.7,<0.13',
        'flax>=0.11,<0.13',
        'optax>=0.2.4,<0.3',
        'orbax-checkpoint>=0.11,<0.13',
        'tensorflow-cpu>=2.16,<2.22',
        'tensorflow-datasets>=4.9.6,<4.10',
        'importlib_resources',  # tfds needs it to prepare datasets.
        'ml-collections>=1.0,<1.2',
        'clu>=0.0.12,<0.1',
        'tensorboard>=2.16,<2.22',
        'scikit-learn>=1.4,<1.10',
        'matplotlib>=3.8,<3.12',
        'absl-py>=2.0',
        'etils[epath]',
        'numpy>=1.26',
    ],
    extras_require={
        'test': ['pytest>=8', 'pytest-xdist>=3.5'],
    },
    entry_points={'console_scripts': ['simclr-jax=simclr_jax.main:run']},
)
