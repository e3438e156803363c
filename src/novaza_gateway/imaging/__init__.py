"""Medical imaging: DICOM archive and DICOMweb, signed URLs, worklist, QC."""
