"""Publishing the built forms (``manyi forms publish``): :mod:`.central` and :mod:`.kobo`
put each form and its roster files on a server; :mod:`.manifest` reads the build."""
