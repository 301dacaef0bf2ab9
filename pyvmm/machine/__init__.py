"""The machine and its run loop: the builder's recipe, the vCPU loop and group, how a run ends."""
