"""`dcsim calibrate`: fit a small correction of the profile to a real deployment's logs."""
