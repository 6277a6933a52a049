"""Applications: reading radiographs (radiograph), the pipeline to a result folder (predict), many images (batch), the viewer and pictures (view, viz), the web server and the demo. May import every room above; the simulator only lazily (a 'for processing' DICOM, the demo's truth).
"""
