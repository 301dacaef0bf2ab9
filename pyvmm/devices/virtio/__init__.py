"""Virtio devices (OASIS Virtio 1.2): the split virtqueue, the MMIO transport and the devices.

queue.py is the virtqueue over guest memory, device.py what a device and its
transport share, mmio.py the virtio-mmio register window, and console.py,
blk.py, rng.py and balloon.py the devices. All of it is pure: no KVM, no
threads, no file descriptors beyond what a device is handed.
"""
