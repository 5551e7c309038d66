<?php
// Lab: 200 response headers of about 100 bytes each (20 KB), more than fastcgi_buffer_size 4k.
for ($i = 0; $i < 200; $i++) {
    header(sprintf('X-Lab-Header-%03d: %s', $i, str_repeat('h', 80)));
}
header('Content-Type: text/plain');
echo "big header\n";
