"""Bad-input tests (issue 12): each case asserts the error class and what its message names."""
