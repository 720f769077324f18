"""Learned policies for the arms: a Diffusion Transformer over action chunks, and an MLP baseline.

`dit` is the network (adaLN-Zero DiT over a 1-D sequence), `diffusion` the noise schedule,
training loss and DDIM sampler with classifier-free guidance (diffusers' schedulers), `policies`
the observation encoder and the two policies with the same inputs: `DiffusionPolicy` and
`MLPPolicy` (behaviour cloning by regression).
"""
