"""`manyi serve`: phones send their forms here (OpenRosa for ODK Collect, ODK Web Forms in
the browser); :mod:`.people` holds who may, with which forms."""
