"""Simulated robots: MuJoCo arms under torque control, tabletop scenes, expert demonstrations and policies."""

import os

# Headless rendering. It must be set before mujoco is first imported (mujoco picks its GL backend at
# import), and any module of this package may be the first to import it, so it is set here.
os.environ.setdefault("MUJOCO_GL", "egl")
