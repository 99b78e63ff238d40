"""Hot reload (issue 19): rules, live config sections and the model bundle swapped into a
running process (``reloader``), on SIGHUP, an admin call or a change of the files (``watch``)."""
