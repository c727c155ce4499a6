"""What every experiment uses: files written atomically, checkpoints, data, the device and processes, config checks."""
