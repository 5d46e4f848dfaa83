<?php
// The PHP page of the bulwark demo (`make run`, examples/demo.yaml): bulwark speaks FastCGI
// to a php-fpm it runs itself. It shows what this request looked like to PHP: the CGI/1.1
// params bulwark sent (RFC 3875) and the request's fields. No phpinfo(): nothing about the
// host beyond the PHP version and this worker's pid.
function h($s) { return htmlspecialchars((string)$s, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8'); }

$params = ['REQUEST_METHOD', 'REQUEST_URI', 'SCRIPT_NAME', 'SCRIPT_FILENAME', 'PATH_INFO',
           'QUERY_STRING', 'DOCUMENT_URI', 'DOCUMENT_ROOT', 'SERVER_PROTOCOL', 'SERVER_NAME',
           'SERVER_PORT', 'REMOTE_ADDR', 'REMOTE_PORT', 'CONTENT_TYPE', 'CONTENT_LENGTH',
           'GATEWAY_INTERFACE', 'SERVER_SOFTWARE'];
$fields = [];
foreach ($_SERVER as $k => $v) {
    if (strncmp($k, 'HTTP_', 5) === 0) {
        $fields[ucwords(strtolower(str_replace('_', '-', substr($k, 5))), '-')] = $v;
    }
}
ksort($fields);
$body = file_get_contents('php://input');

header('Cache-Control: no-store');
header('X-Backend: php-fpm');
if (strpos($_SERVER['HTTP_ACCEPT'] ?? '', 'text/html') === false) {
    // curl and scripts get plain text
    header('Content-Type: text/plain; charset=utf-8');
    printf("Hello from PHP %s (php-fpm pid %d), through bulwark over FastCGI.\n",
           PHP_VERSION, getmypid());
    foreach ($params as $p) {
        printf("%-18s %s\n", $p, $_SERVER[$p] ?? '');
    }
    foreach ($fields as $k => $v) {
        printf("%-18s %s\n", "$k:", $v);
    }
    if ($_POST) {
        echo "POST form         ", json_encode($_POST), "\n";
    }
    exit;
}
?><!doctype html>
<meta charset=utf-8><title>bulwark demo: PHP</title>
<style>body{font:15px/1.4 system-ui,sans-serif;margin:2em}td{padding:2px 12px 2px 0;
vertical-align:top}td:first-child{color:#555;white-space:nowrap}code,td{font-family:monospace}</style>
<h1>PHP <?= h(PHP_VERSION) ?> through bulwark</h1>
<p>php-fpm worker pid <?= getmypid() ?>, run by bulwark as a program and spoken to over
FastCGI on a unix socket. Reload to see another worker; the pool has a few.</p>
<form method=post action="<?= h($_SERVER['SCRIPT_NAME']) ?>?from=form">
<input name=name placeholder="your name" value="<?= h($_POST['name'] ?? '') ?>">
<button>POST it</button></form>
<?php if ($_POST): ?><p>You posted: <code><?= h(json_encode($_POST)) ?></code>
(<?= strlen($body) ?> bytes of <?= h($_SERVER['CONTENT_TYPE'] ?? '') ?>)</p><?php endif ?>
<h2>CGI params bulwark sent</h2>
<table><?php foreach ($params as $p): ?>
<tr><td><?= h($p) ?><td><?= h($_SERVER[$p] ?? '') ?><?php endforeach ?>
</table>
<h2>Request header fields</h2>
<table><?php foreach ($fields as $k => $v): ?>
<tr><td><?= h($k) ?><td><?= h($v) ?><?php endforeach ?>
</table>
