<?php
// Lab: one 16 KB response header: longer than a header line Apache accepts from a CGI/FastCGI
// answer (8 KB), and than nginx's fastcgi_buffer_size.
header('X-Lab-Huge: ' . str_repeat('h', 16384));
header('Content-Type: text/plain');
echo "huge header\n";
