"""What observes a run: the exit trace and statistics, the memory map, address translation."""
