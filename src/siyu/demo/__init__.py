"""The built-in sample brand used by ``siyu demo`` until the simulator lands."""
