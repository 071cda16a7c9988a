"""The CPU's fast paths: channels-last memory, batch slices on the worker threads, fused passes."""
